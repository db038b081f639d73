# /// script
# dependencies = [
