"""``sarm serve``: the reward server (:mod:`workflows.serve.app`), its batching, protocol and metrics."""
