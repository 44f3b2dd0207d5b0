"""`braintumor serve`: a FastAPI service for one train run (app.py wiring, settings, schemas, predictor)."""
