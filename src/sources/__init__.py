"""Where prices come from, each turned into bars (``storage.BAR_DTYPE``) for the loader.

``csv`` parses and validates ``<SYMBOL>.csv`` files, ``yahoo`` asks Yahoo Finance through
yfinance, ``synthetic`` draws reproducible random walks. ``stocks.loader`` runs them in
parallel and stores what they return; none of them touches Redis. Import the one you
need: ``yahoo`` pulls in yfinance, which is slow to import.
"""
