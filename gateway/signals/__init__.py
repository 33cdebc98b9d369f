"""Pure encoders and decoders of consent signals: Google Consent Mode v2, Global Privacy Control."""
