"""Site data: site files, catalogs, translations, built-in texts, versions."""
