package standin

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CA is a throwaway certificate authority for tests.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	Pool    *x509.CertPool // contains only Cert
}

// Leaf is a certificate issued by a CA, with its private key.
type Leaf struct {
	CertPEM, KeyPEM []byte          // PEM "CERTIFICATE" and PKCS #8 "PRIVATE KEY"
	TLS             tls.Certificate // ready for tls.Config.Certificates
}

// NewCA creates a CA with an ECDSA P-256 key, valid from one hour ago until
// 24 hours from now.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("standin: generate ca key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("standin: create ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("standin: parse ca certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Pool:    pool,
	}, nil
}

// Issue issues a server and client certificate for the given names. Each
// name becomes an IP address SAN if it parses as an IP literal (brackets
// allowed) and a DNS name SAN otherwise. The first name is also the
// subject common name. The validity matches the CA's.
func (ca *CA) Issue(names ...string) (*Leaf, error) {
	return ca.issue(ca.Cert.NotBefore, ca.Cert.NotAfter, names)
}

// IssueExpired is Issue for a certificate that expired a day ago.
func (ca *CA) IssueExpired(names ...string) (*Leaf, error) {
	now := time.Now()
	return ca.issue(now.Add(-48*time.Hour), now.Add(-24*time.Hour), names)
}

func (ca *CA) issue(notBefore, notAfter time.Time, names []string) (*Leaf, error) {
	if len(names) == 0 {
		return nil, errors.New("standin: issue: no names given")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("standin: generate leaf key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, name := range names {
		if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, name)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("standin: create leaf certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("standin: marshal leaf key: %w", err)
	}
	l := &Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	l.TLS, err = tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("standin: load leaf key pair: %w", err)
	}
	return l, nil
}

// WriteFiles writes the certificate to dir/base.crt and the key to
// dir/base.key (mode 0600) and returns both paths.
func (l *Leaf) WriteFiles(dir, base string) (certFile, keyFile string, err error) {
	certFile = filepath.Join(dir, base+".crt")
	keyFile = filepath.Join(dir, base+".key")
	if err := os.WriteFile(certFile, l.CertPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("standin: write certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, l.KeyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("standin: write key: %w", err)
	}
	return certFile, keyFile, nil
}

// WriteFile writes the CA certificate in PEM form to dir/name and returns
// the path.
func (ca *CA) WriteFile(dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, ca.CertPEM, 0o644); err != nil {
		return "", fmt.Errorf("standin: write ca certificate: %w", err)
	}
	return path, nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("standin: generate serial: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}
