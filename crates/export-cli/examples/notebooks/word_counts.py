# /// script
# requires-python = ">=3.10"
# dependencies = ["marimo"]
#
# [tool.marimo.opengraph]
# title = "Word counts"
# description = "The most common words of the opening of A Tale of Two Cities."
# tags = ["text", "tables"]
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
    from collections import Counter

    text = """It was the best of times, it was the worst of times, it was the age of
    wisdom, it was the age of foolishness, it was the epoch of belief, it was the
    epoch of incredulity."""
    counts = Counter(w.strip(",.").lower() for w in text.split())
    return (counts,)


@app.cell
def _(counts, mo):
    mo.ui.table([{"word": w, "count": c} for w, c in counts.most_common(10)])
    return


if __name__ == "__main__":
    app.run()
