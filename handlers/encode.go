package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"regexp"
	"strings"

	"github.com/go-playground/validator/v10"
)

var slugRE = regexp.MustCompile(`^[A-Za-z0-9_.-]*$`)

// maxBodyBytes bounds every request body the API decodes. Requests carry references, never case data.
const maxBodyBytes = 64 << 10

// newValidator returns the one validator the server uses; errors are keyed by JSON field names.
func newValidator() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	// slug: identifiers and reason codes, letters, digits, '_', '-' and '.'.
	_ = v.RegisterValidation("slug", func(fl validator.FieldLevel) bool {
		return slugRE.MatchString(fl.Field().String())
	})
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			return ""
		}
		return name
	})
	return v
}

// decode is the one decode path: content type, size limit, unknown fields, trailing data, validation.
// An empty body decodes to the zero value when optional is true.
func decode[T any](r *http.Request, v *validator.Validate, optional bool) (T, error) {
	var out T
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		return out, err
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if optional {
			return out, nil
		}
		return out, problem(http.StatusBadRequest, "a JSON body is required")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		p := problem(http.StatusUnsupportedMediaType, "the body must be application/json")
		p.Header = http.Header{"Accept-Post": {"application/json"}}
		return out, p
	}
	if err := decodeJSON(body, &out); err != nil {
		return out, err
	}
	if err := v.Struct(out); err != nil {
		var verrs validator.ValidationErrors
		if errors.As(err, &verrs) {
			fields := make(map[string]string, len(verrs))
			for _, fe := range verrs {
				fields[jsonPath(fe)] = describe(fe)
			}
			return out, invalid(fields)
		}
		return out, err
	}
	return out, nil
}

// decodeJSON decodes exactly one JSON value with no unknown fields. Type errors are reported per field.
func decodeJSON(body []byte, out any) error {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return invalid(map[string]string{te.Field: "must be a " + te.Type.Kind().String()})
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return invalid(map[string]string{field: "unknown field"})
		default:
			return problem(http.StatusBadRequest, "malformed JSON body")
		}
	}
	if dec.More() {
		return problem(http.StatusBadRequest, "trailing data after the JSON body")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return problem(http.StatusBadRequest, "trailing data after the JSON body")
	}
	return nil
}

func jsonPath(fe validator.FieldError) string {
	ns := fe.Namespace()
	if _, rest, ok := strings.Cut(ns, "."); ok {
		return rest
	}
	return fe.Field()
}

func describe(fe validator.FieldError) string {
	switch fe.Tag() {
	case "required":
		return "is required"
	case "max":
		return fmt.Sprintf("must be at most %s characters", fe.Param())
	case "oneof":
		return "must be one of: " + fe.Param()
	case "slug":
		return "may contain only letters, digits, '_', '-' and '.'"
	case "datetime":
		return "must be an RFC 3339 time"
	default:
		return "is invalid (" + fe.Tag() + ")"
	}
}
