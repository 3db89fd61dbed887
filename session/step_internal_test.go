package session

import "testing"

// Past inputs and present outputs pair by what follows their prefixes.
func TestPastKey(t *testing.T) {
	cases := []struct {
		past, present string
	}{
		{"past_0", "present_0"},
		{"past_11", "present_11"},
		{"past_key_values.0.key", "present.0.key"},
		{"past_key_values.3.value", "present.3.value"},
		{"past_key_values.0.decoder.key", "present.0.decoder.key"},
		{"past_key_values.2.key", "present_key_values.2.key"},
		{"past", "present"},
	}
	for _, c := range cases {
		p, ok1 := pastKey(c.past)
		q, ok2 := pastKey(c.present)
		if !ok1 || !ok2 || p != q {
			t.Errorf("%s → %q, %s → %q: want one key", c.past, p, c.present, q)
		}
	}
	for _, pair := range [][2]string{{"past_1", "present_11"}, {"past_key_values.0.key", "present.0.value"}} {
		p, _ := pastKey(pair[0])
		q, _ := pastKey(pair[1])
		if p == q {
			t.Errorf("%s and %s pair, but are different state", pair[0], pair[1])
		}
	}
	if _, ok := pastKey("logits"); ok {
		t.Error("logits has a past key")
	}
}
