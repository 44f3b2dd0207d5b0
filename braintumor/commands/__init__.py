"""The commands: each module orchestrates one CLI command from the building blocks; no Typer, no Rich."""
