package handlers

import (
	"errors"
	"strings"
)

// ParseIncidentID accepts a decimal incident id of up to 20 digits, or the XSIAM case form
// "INCIDENT-<n>", and returns the normalised decimal id.
func ParseIncidentID(s string) (string, error) {
	if len(s) > 9 && strings.EqualFold(s[:9], "INCIDENT-") {
		s = s[9:]
	}
	if s == "" || len(s) > 20 {
		return "", errors.New("must be a decimal id of 1 to 20 digits, or INCIDENT-<n>")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return "", errors.New("must be a decimal id of 1 to 20 digits, or INCIDENT-<n>")
		}
	}
	if s[0] == '0' {
		return "", errors.New("must not have leading zeros")
	}
	return s, nil
}
