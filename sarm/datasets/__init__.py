"""Built-in datasets: the generated preference data behind ``demo:train`` / ``demo:test``.

:mod:`sarm.datasets.demo` generates it (seeded, in memory) from the templates in
:mod:`sarm.datasets.templates`.
"""
