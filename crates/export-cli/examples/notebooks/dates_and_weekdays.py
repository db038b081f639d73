# /// script
# requires-python = ">=3.10"
# dependencies = ["marimo"]
#
# [tool.marimo.opengraph]
# title = "Dates and weekdays"
# description = "The weekday each month of 2026 starts on, as a table, with Python's datetime."
# tags = ["dates", "tables"]
# ///

import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import marimo as mo
    return (mo,)


@app.cell
def _():
    import datetime

    start = datetime.date(2026, 1, 1)
    firsts = [datetime.date(2026, m, 1) for m in range(1, 13)]
    return (firsts,)


@app.cell
def _(firsts, mo):
    mo.ui.table([{"month": d.strftime("%B"), "starts on": d.strftime("%A")} for d in firsts])
    return


if __name__ == "__main__":
    app.run()
