"""Write N MiB (default 40) of pseudo-random English-like text to stdout,
the same bytes on every run (seeded): the input of the xz validation run."""
import random
import sys

mib = int(sys.argv[1]) if len(sys.argv) > 1 else 40
rng = random.Random(20231)
words = ["".join(rng.choice("etaoinshrdlucmfwypvbgkqjxz") for _ in range(rng.randint(2, 11)))
         for _ in range(20000)]
out = sys.stdout.buffer
left = mib << 20
while left > 0:
    line = (" ".join(rng.choices(words, k=12)) + ".\n").encode()[:left]
    out.write(line)
    left -= len(line)
