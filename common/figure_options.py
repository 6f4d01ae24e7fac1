"""The figures' file format and resolution for the running script (--format, --dpi).

Set once by common.cli.start, read by common.figures when it saves; a module of its own so
that neither of those two imports the other (cli stays free of plotting imports).
"""
FORMAT = "png"    # png, pdf or svg (common.cli.FIGURE_FORMATS)
DPI = None        # None: each figure's own default
