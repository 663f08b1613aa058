"""The workflows behind the CLI (compare, tune, distill); none imports another."""
