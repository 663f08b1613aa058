"""`sendit bench`: engines and precisions compared on equal work, interleaved."""
