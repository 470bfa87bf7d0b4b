/* test_htmlreport: report.html's writer (simulator/htmlreport.c) on its own. An inlined
 * chart loses gnuplot's XML prolog and DOCTYPE (the DTD is a URL) and gets its ids and
 * the references to them prefixed with its name, so two charts' ids never collide; text
 * from the console is escaped; a missing chart says so instead of breaking the page. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "htmlreport.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

static void test_page(void **state)
{
    (void)state;
    kv_err err = {0};
    scenario *s = scn_load("scenarios/small-random.yaml", "policies/presets", &err);
    assert_non_null(s);
    char dir[] = "/tmp/test_htmlreport.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char svg[256], out[256];
    snprintf(svg, sizeof svg, "%s/a.svg", dir);
    FILE *f = fopen(svg, "w");
    assert_non_null(f);
    fputs("<?xml version=\"1.0\"?>\n<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" "
          "\"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd\">\n"
          "<svg viewBox=\"0 0 10 10\"><defs><path id='gpPt0' d='M0,0'/></defs>"
          "<use xlink:href='#gpPt0'/><g id=\"gnuplot_canvas\" fill=\"url(#grad)\"/></svg>\n",
          f);
    fclose(f);
    static const char *const charts[] = {"a", "missing"};
    static const char *const names[] = {"r<1>"};
    hr_parts p = {.header = "h & h", .compare = "x < y", .expect = "PASS  r: ttft_p90 < 1s", .svg_dir = dir,
                  .charts = charts, .n_charts = 2, .names = names, .n = 0};
    snprintf(out, sizeof out, "%s/report.html", dir);
    assert_int_equal(hr_write(s, out, &p, &err), KV_OK);
    const char *h = slurp(out);
    assert_null(strstr(h, "<?xml"));
    assert_null(strstr(h, "DOCTYPE svg"));
    assert_null(strstr(h, "svg11.dtd"));
    assert_non_null(strstr(h, "<path id='a-gpPt0'"));
    assert_non_null(strstr(h, "<use xlink:href='#a-gpPt0'/>"));
    assert_non_null(strstr(h, "id=\"a-gnuplot_canvas\" fill=\"url(#a-grad)\""));
    assert_non_null(strstr(h, "<p>h &amp; h</p>"));
    assert_non_null(strstr(h, "<pre>x &lt; y</pre>"));
    assert_non_null(strstr(h, "PASS  r: ttft_p90 &lt; 1s"));
    assert_non_null(strstr(h, "chart missing: not drawn"));
    assert_non_null(strstr(h, "<pre id=\"scenario\"># No sharing at all"));
    assert_non_null(strstr(h, "</body></html>\n"));
    unlink(svg);
    unlink(out);
    rmdir(dir);
    scn_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
