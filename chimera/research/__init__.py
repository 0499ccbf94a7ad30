"""Pure research statistics (no I/O): performance ratios with 365-day annualisation, probabilistic and
deflated Sharpe, Benjamini–Hochberg that a NaN cannot poison, walk-forward splits purged by horizon."""
