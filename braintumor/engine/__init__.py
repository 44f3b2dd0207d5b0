"""The engine room: a run that owns its directory, the one scorer, the fit (between commands and blocks)."""
