"""The demo: direction models trained on real bars and registered in the embedded MLflow store."""
