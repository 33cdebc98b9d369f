"""Where a visitor is: client IP through trusted proxies, CDN headers, MaxMind databases."""
