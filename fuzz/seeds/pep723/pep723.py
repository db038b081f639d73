# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "marimo[sql]>=0.9",
#     "numpy==2.*",
#     "Pandas_Extra.x; python_version < '4'",
# ]
# ///
#
# ///
import marimo

app = marimo.App(width="medium")
