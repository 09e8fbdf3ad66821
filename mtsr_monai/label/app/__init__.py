"""The MONAI Label app folder (``monailabel start_server --app``): its ``main.py`` defines the app."""
