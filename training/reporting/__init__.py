"""The pieces of the backtest report; `training.report` assembles them and is the public API.

``runs`` reads run directories and computes each strategy's daily returns; ``tables`` the
papers' tables over seeds and the combinations; ``compare`` the standard errors, tests,
per-asset, rolling-correlation and market views; ``papers`` the DMN paper's grid and Boutier
(2023) Table 3 when their models are among the runs; ``plots`` the figures.
"""
