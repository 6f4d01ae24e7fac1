"""The interactive explorer: a local web page driving the project's own Gray-Scott stepper.

    python -m explorer                # serves http://127.0.0.1:8765/ (prints the address)

`session.Session` holds one medium (scarring.Study's protocol, substrate.GrayScott, the
registered storage rules) and applies the page's validated messages (`messages.parse`);
`server` is the aiohttp web server and its WebSocket channel (frames as compact binary);
`static/` is the page itself (plain HTML, CSS and JavaScript, no build step). The browser
only draws what the server sends: there is one physics, the project's.
"""
