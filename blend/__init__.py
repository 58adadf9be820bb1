"""blend: see DESIGN.md. Arrives with a later issue."""
