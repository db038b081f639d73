# /// script
# requires-python = ">=3.10"
# dependencies = ["marimo"]
#
# [tool.marimo.opengraph]
# title = "A markdown tour"
# description = "Bold, italic, code, math and a callout, as marimo renders markdown."
# tags = ["intro", "markdown"]
# ///

import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import marimo as mo
    return (mo,)


@app.cell
def _(mo):
    mo.md(r"""
    ## A short tour of marimo markdown

    - **Bold**, *italic* and `code`
    - Math: $e^{i\pi} + 1 = 0$
    - A callout follows.
    """)
    return


@app.cell
def _(mo):
    mo.callout(mo.md("Exported pages are static: no Python runs in the browser."), kind="info")
    return


if __name__ == "__main__":
    app.run()
