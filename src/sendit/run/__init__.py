"""The run folder (every name in it, its writers) and the lifecycle every command that writes one shares."""
