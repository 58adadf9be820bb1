"""glmix: see DESIGN.md. Arrives with issue 4."""
