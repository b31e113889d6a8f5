"""Command-line front ends. Thin: parse arguments, call the library, print."""
