"""Open Inference Protocol over gRPC: a thin adapter over ``serving.open_inference``."""
