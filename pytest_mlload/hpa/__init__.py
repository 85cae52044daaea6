"""HPA/KEDA: Prometheus signals at the operating point -> recommended trigger thresholds."""
