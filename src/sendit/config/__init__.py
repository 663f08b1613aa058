"""The one config system: the typed schema, its checks, the flags made from it, distill and tune sections."""
