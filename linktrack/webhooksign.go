package linktrack

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// webhookSignatureHeader carries a delivery's signature.
const webhookSignatureHeader = "Linktrack-Signature"

// webhookEventIDHeader carries the event's id, the same at every attempt
// of its delivery.
const webhookEventIDHeader = "Linktrack-Event-Id"

// signWebhook returns the signature header of a delivery of body signed
// at time at: "t=<unix seconds>,v1=<hex>", where the hex is the
// HMAC-SHA256, keyed with secret, of the unix seconds, a '.' and the
// exact body. The time inside the signed text lets a receiver refuse
// old deliveries replayed.
func signWebhook(secret, body []byte, at time.Time) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}
