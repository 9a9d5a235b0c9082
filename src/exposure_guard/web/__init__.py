"""The page inside QTS: see web/app.py."""
