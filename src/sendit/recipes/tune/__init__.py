"""`sendit tune`: per-method search (Optuna or Ray), trials, confirmation over seeds."""
