"""The research toolkit: the synthetic data engine, training of the tiny models, evaluation suites and reports.

It sits above both the gateway (``service``) and the workers (``workers``): evaluation runs the service's own
strategies in process on the workers' backends. Nothing below imports it.
"""
