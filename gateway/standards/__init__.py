"""IAB TCF v2.3 TC strings and IAB GPP strings: pure decoders and encoders, from the specifications.

``tcf.decode``/``tcf.encode`` and ``gpp.decode``/``gpp.encode``; malformed input raises
``MalformedString`` and unencodable values ``InvalidModel`` (both ``BadRequest``: a 400 at the
web edge, one line in the CLI), never an uncaught exception.
"""
