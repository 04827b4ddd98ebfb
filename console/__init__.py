"""wasmdeck console: a Textual admin console over an engine client.

`app.py` is the App; `screens/` holds one view per tab, `widgets/` the pieces and dialogs they
share; `messages.py` the app-level messages, `context.py` what a view may ask of its app
(`ConsoleHost`, typed) and what the app asks of a view with a save step (`SaveStep`),
`formatting.py` how outcomes, statuses, sizes and times look everywhere, and `styles.py` the
styling convention (a `.tcss` file beside each styled module).
"""
