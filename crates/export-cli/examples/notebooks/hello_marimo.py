# /// script
# requires-python = ">=3.10"
# dependencies = ["marimo"]
#
# [tool.marimo.opengraph]
# title = "Hello, marimo"
# description = "A first notebook: a markdown cell and Python cells that depend on each other."
# tags = ["intro"]
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
    mo.md("""# Hello, marimo

    This page was exported by `export-nb`: one `uvx marimo export` process per
    notebook, many at once, with an index page linking them.""")
    return


if __name__ == "__main__":
    app.run()
