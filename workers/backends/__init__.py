"""Model backends behind two small interfaces: ``PolicyBackend`` and ``StepScorer``."""
