"""`make bench`: what the gateway costs on top of bare Flask; see bench/results.md."""
