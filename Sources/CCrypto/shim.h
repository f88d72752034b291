#ifndef RAILGATE_CCRYPTO_SHIM_H
#define RAILGATE_CCRYPTO_SHIM_H
// OpenSSL's libcrypto, for `railgate doctor` to read a certificate's validity (notBefore,
// notAfter), subject and issuer, and to check that a key matches its certificate. libmosquitto
// already loads libcrypto (through libssl), so this adds no library to the box.
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

// Not libcrypto, but doctor's too: Swift's Glibc module does not export <sys/timex.h>, whose
// ntp_adjtime (read-only with modes 0) tells whether the kernel's clock is synchronised (STA_UNSYNC).
#include <sys/timex.h>
#endif
