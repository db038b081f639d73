# /// script
# requires-python = ">=3.10"
# dependencies = ["marimo"]
#
# [tool.marimo.opengraph]
# title = "Prime numbers"
# description = "The primes below 1000, how many there are and the last of them."
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
    def sieve(limit):
        is_prime = [True] * (limit + 1)
        is_prime[0:2] = [False, False]
        for i in range(2, int(limit**0.5) + 1):
            if is_prime[i]:
                for j in range(i * i, limit + 1, i):
                    is_prime[j] = False
        return [i for i, p in enumerate(is_prime) if p]

    primes = sieve(1000)
    return (primes,)


@app.cell
def _(mo, primes):
    mo.md(f"There are **{len(primes)}** primes below 1000; the last is {primes[-1]}.")
    return


if __name__ == "__main__":
    app.run()
