"""Sessions, impressions and feedback: which model suggested what to whom, signed into the answer itself
(impressions.py), and what the user then accepted or typed, recorded once per impression (service.py)."""
