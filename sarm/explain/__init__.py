"""Feature explanations: the evidence they are written from, and the explainers."""
