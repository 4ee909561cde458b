"""UTF-8 whatever the locale, as a Go program (otelcol) is.

Python decodes the environment and command line, and encodes file names and stdout, in the
locale's charset. Under a locale that is not UTF-8 (LANG=de_DE.ISO-8859-1 left on an old gateway)
a value `é` set in the environment reached the telemetry as `Ã©`, a file the config named in UTF-8
was another file or none (the config is UTF-8 text, the name was encoded in latin-1), and
print-config failed on the first character latin-1 lacks. Go takes each as the UTF-8 bytes it is.
Python's UTF-8 mode (PEP 540) does the same, but only from the interpreter's start, so
`utf8_mode` starts the process again in it, the same program with the same arguments (the same
PID, descriptors and environment), once, where the locale is not UTF-8 already. Under the C or
POSIX locale Python is in UTF-8 mode by itself.
"""

from __future__ import annotations

import codecs
import os
import sys


def utf8_mode() -> None:
    """Run on in UTF-8 mode: at once when in it already or the locale is UTF-8, else after exec."""
    if sys.flags.utf8_mode or codecs.lookup(sys.getfilesystemencoding()).name == "utf-8":
        return
    try:
        os.execv(sys.executable, [sys.executable, "-X", "utf8", *sys.orig_argv[1:]])
    except OSError:  # no executable to start again (an embedded interpreter): on in the locale's charset
        return
