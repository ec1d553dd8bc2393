"""Measuring search methods against the CE budget.

evaluate (``evaluate()``, ``EvalTable``), metrics (``topk_recall``), tuning (running a method
over queries, choosing a setting on dev queries, the demo's λ), data (``EvalData`` and its
loaders), methods (the method factory), run (a resumable evaluation run), demo (AXN vs RNR
with live CE calls), plotting.
"""
