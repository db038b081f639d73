# /// script
# dependencies = ["x\n-r /etc/passwd"]
# ///
import marimo
app = marimo.App()
