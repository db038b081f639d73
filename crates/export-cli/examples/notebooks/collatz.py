# /// script
# requires-python = ">=3.10"
# dependencies = ["marimo"]
#
# [tool.marimo.opengraph]
# title = "Collatz sequences"
# description = "How many steps the numbers below 10,000 take to reach 1, and which one takes the longest."
# tags = ["math", "loops"]
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
    def steps(n):
        count = 0
        while n != 1:
            n = n // 2 if n % 2 == 0 else 3 * n + 1
            count += 1
        return count

    longest = max(range(1, 10_000), key=steps)
    return longest, steps


@app.cell
def _(longest, mo, steps):
    mo.md(f"Below 10,000, **{longest}** takes the longest: {steps(longest)} steps.")
    return


if __name__ == "__main__":
    app.run()
