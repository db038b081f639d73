# /// pyproject
# [run]
# ///

# /// script
# dependencies = ["a"]
# ///
