"""The web app's shared pieces: sessions, authentication, access rules, errors and headers."""
