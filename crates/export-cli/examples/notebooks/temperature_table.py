# /// script
# requires-python = ">=3.10"
# dependencies = ["marimo"]
#
# [tool.marimo.opengraph]
# title = "Temperature table"
# description = "Celsius to Fahrenheit as an interactive table."
# tags = ["tables"]
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
    rows = [{"celsius": c, "fahrenheit": round(c * 9 / 5 + 32, 1)} for c in range(-20, 41, 5)]
    return (rows,)


@app.cell
def _(mo, rows):
    mo.vstack([mo.md("## Celsius to Fahrenheit"), mo.ui.table(rows)])
    return


if __name__ == "__main__":
    app.run()
