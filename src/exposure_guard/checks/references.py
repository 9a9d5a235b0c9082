"""Advisories and guides the checks cite (the ``references`` of a finding)."""

ADVISORY_2022 = ("https://www.qnap.com/en/security-news/2022/take-immediate-actions-to-stop-your-nas-from-exposing-"
                 "to-the-internet-and-fight-against-ransomware-together")
UPNP_ADVISORY = "https://www.qnap.com/en/security-news/2022/qnap-nas-security-disable-upnp-port-forwarding-on-routers"
QSNATCH = "https://www.qnap.com/en/security-advisory/nas-201911-01"
SECURE_ACCESS = "https://www.qnap.com/go/solution/secure-remote-access/"
SECURITY_GUIDE = "https://www.qnap.com/en/security"
DISABLE_ADMIN = "https://www.qnap.com/en/how-to/faq/article/how-to-disable-the-admin-account"
SECURITY_ADVISORIES = "https://www.qnap.com/en/security-advisories"
UPNPROXY = "https://www.akamai.com/blog/security/upnproxy-eternalsilence"
CHECKMATE = "https://www.qnap.com/en/security-advisory/qsa-22-21"
DEADBOLT_PHOTO_STATION = "https://www.qnap.com/en/security-advisory/qsa-22-24"
NETATALK_ADVISORY = "https://www.qnap.com/en/security-advisory/qsa-22-12"
