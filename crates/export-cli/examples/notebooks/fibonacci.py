# /// script
# requires-python = ">=3.10"
# dependencies = ["marimo"]
#
# [tool.marimo.opengraph]
# title = "Fibonacci numbers"
# description = "The first twenty Fibonacci numbers, computed in a cell."
# tags = ["math"]
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
    def fib(n):
        a, b = 0, 1
        out = []
        for _ in range(n):
            out.append(a)
            a, b = b, a + b
        return out

    numbers = fib(20)
    return (numbers,)


@app.cell
def _(mo, numbers):
    mo.ui.table([{"n": i, "fib(n)": f} for i, f in enumerate(numbers)])
    return


if __name__ == "__main__":
    app.run()
