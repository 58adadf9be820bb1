"""ncf: see DESIGN.md. Arrives with issue 3."""
