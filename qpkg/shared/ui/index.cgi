#!/bin/sh
# The ExposureGuard page, run by QTS's own admin web server as a CGI script (the service script links this
# folder as /home/httpd/cgi-bin/qpkg/ExposureGuard at every start). No port of our own is opened: the page
# is reached only through QTS's 8080/443, and only a logged-in QTS administrator gets anything from it.
exec /bin/sh /etc/init.d/exposure-guard.sh cgi
